#include "stallwatch/agent.h"

#include <event2/event.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "libevent_weak.h"
#include "log.h"
#include "platform/proc.h"
#include "runtime.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/log_text.h"
#include "wait_hook.h"

namespace stallwatch {

namespace {
std::atomic<uint64_t> g_loop_counter{0};

// The loops attached in this process, by base: a base is watched once. A program that attaches
// its own agent and also runs under the preload shim (whose copy of the agent its calls reach)
// would otherwise get a second probe and loop — "main" and "main-2", every stall counted twice.
// A second attach of a watched base returns a handle that shares the first one's loop.
std::mutex g_bases_mu;
std::map<event_base*, std::weak_ptr<internal::LoopContext>>& Bases() {
  static auto* m = new std::map<event_base*, std::weak_ptr<internal::LoopContext>>();
  return *m;  // never destroyed: agents may detach during exit
}
std::set<const Agent*>& Aliases() {
  static auto* s = new std::set<const Agent*>();
  return *s;
}
}  // namespace

namespace {

// Fields set in code, then the STALLWATCH_* environment, then the defaults; then the ranges.
Status ResolveOptions(Options* o) {
  Options& options = *o;
  options = Options::FromEnvironment(std::move(options));
  {
    if (*options.stall_threshold < std::chrono::milliseconds(1)) {
      return InvalidArgumentError("stall_threshold must be at least 1ms");
    }
    if (*options.probe_interval < std::chrono::microseconds(100)) {
      return InvalidArgumentError("probe_interval must be at least 100us");
    }
    if (*options.report_interval < std::chrono::milliseconds(100)) {
      return InvalidArgumentError("report_interval must be at least 100ms");
    }
    if (options.sample_signal != 0 &&
        (options.sample_signal < SIGRTMIN || options.sample_signal > SIGRTMAX)) {
      return InvalidArgumentError("sample_signal must be a real-time signal (SIGRTMIN..SIGRTMAX, " +
                                  std::to_string(SIGRTMIN) + ".." + std::to_string(SIGRTMAX) +
                                  "), e.g. SIGRTMIN + 3");
    }
    if (*options.max_stack_reports_per_minute < 0) {
      return InvalidArgumentError("max_stack_reports_per_minute must be at least 0");
    }
  }
  return OkStatus();
}

// A new loop's context in this process's runtime (and its slot in the watchdog process's
// mapping, if the watchdog runs as one), registered with the wait hook. `release` undoes it.
// `base`: the libevent base, or nullptr for an epoll loop.
StatusOr<std::shared_ptr<internal::LoopContext>> NewContext(event_base* base, Options options,
                                                            std::function<void()>* release) {
  auto rt = internal::Runtime::Acquire(options);
  if (!rt.ok()) {
    return rt.status();
  }
  internal::WatchdogProcess* wp = (*rt)->watchdog_process();
  if (wp != nullptr && (options.on_stall || options.on_delay)) {
    return FailedPreconditionError(
        "hooks (on_stall, on_delay) run on an agent thread, but this program's watchdog runs "
        "in a process of its own (it was single-threaded at the first attach); set "
        "Options::watchdog = WatchdogMode::kThread or STALLWATCH_WATCHDOG=thread");
  }
  int slot = -1;
  if (wp != nullptr) {
    slot = wp->AllocateSlot();
    if (slot < 0) {
      return ResourceExhaustedError(
          "too many loops attached in this process (at most " +
          std::to_string(internal::kMaxProcessLoops) +
          " with the watchdog in a process of its own; STALLWATCH_WATCHDOG=thread allows 256)");
    }
  }
  auto ctx = std::make_shared<internal::LoopContext>(slot >= 0 ? wp->loop_state(slot) : nullptr);
  ctx->slot = slot;
  const uint64_t n = g_loop_counter.fetch_add(1);
  ctx->snapshot.name = options.loop_name.empty() ? "loop-" + std::to_string(n) : options.loop_name;
  ctx->state.kind =
      base != nullptr ? agent::internal::LoopState::kLibevent : agent::internal::LoopState::kEpoll;
  ctx->state.base = base;
  ctx->state.threshold_ns = options.stall_threshold->count();
  ctx->state.interval_ns = options.probe_interval->count();
  ctx->options = std::move(options);
  ctx->runtime = *rt;
  ctx->service = ctx->runtime->service();
  if (!agent::internal::RegisterLoop(&ctx->state)) {
    if (slot >= 0) {
      wp->ReleaseSlot(slot);
    }
    return ResourceExhaustedError("too many loops attached in this process (at most 256)");
  }
  internal::LoopContext* raw = ctx.get();
  *release = [raw, wp, slot] {
    agent::internal::UnregisterLoop(&raw->state);
    if (slot >= 0) {
      wp->ReleaseSlot(slot);
    }
  };
  return ctx;
}

}  // namespace

StatusOr<std::unique_ptr<Agent>> Agent::Attach(event_base* base, Options options) {
  try {
    if (base == nullptr) {
      return InvalidArgumentError("event_base is null");
    }
    if (event_new == nullptr) {
      return FailedPreconditionError("libevent is not loaded");
    }
    if (Status st = ResolveOptions(&options); !st.ok()) {
      return st;
    }
    {
      std::lock_guard<std::mutex> lock(g_bases_mu);
      auto it = Bases().find(base);
      std::shared_ptr<internal::LoopContext> existing =
          it != Bases().end() ? it->second.lock() : nullptr;
      if (existing && existing->runtime && !existing->runtime->forked_child()) {
        agent::internal::LogWarn(
            "this event_base is already watched as loop '{}' (the program attaches its own "
            "agent and runs under the preload shim too); watching it once, with the first "
            "attach's settings",
            EscapeForLog(existing->snapshot.Name()));
        std::unique_ptr<Agent> alias(new Agent(std::move(existing)));
        Aliases().insert(alias.get());
        return alias;
      }
    }
    std::function<void()> release;
    auto made = NewContext(base, std::move(options), &release);
    if (!made.ok()) {
      return made.status();
    }
    std::shared_ptr<internal::LoopContext> ctx = std::move(*made);
    if (Status st = ctx->probe.Start(&ctx->state); !st.ok()) {
      release();
      return st;
    }
    // Loop boundaries: with libevent >= 2.2 its prepare/check watchers give them; else from the
    // epoll backend's epoll_wait (its fd bound now or, failing that, found by the watchdog);
    // other backends are probe-only (docs/design.md).
    const bool evwatch = ctx->evwatch.Start(&ctx->state);
    const char* method = evwatch ? nullptr : event_base_get_method(base);
    if (method != nullptr && std::strcmp(method, "epoll") == 0) {
      const int epfd =
          agent::platform::FindEpollFdContaining(ctx->probe.timer_fd(), agent::platform::GetTid());
      if (epfd >= 0) {
        agent::internal::BindEpollFd(&ctx->state, epfd);
      }
    } else {
      ctx->epfd_binding = internal::EpfdBinding::kNone;
    }
    ctx->runtime->Add(ctx);
    {
      std::lock_guard<std::mutex> lock(g_bases_mu);
      Bases()[base] = ctx;
    }
    return std::unique_ptr<Agent>(new Agent(std::move(ctx)));
  } catch (const std::exception& e) {
    return InternalError(std::string("attach failed: ") + e.what());
  }
}

StatusOr<std::unique_ptr<Agent>> Agent::AttachEpoll(int epfd, Options options) {
  try {
    char link[128] = {};
    const std::string fd_path = "/proc/self/fd/" + std::to_string(epfd);
    if (epfd < 0 || readlink(fd_path.c_str(), link, sizeof(link) - 1) < 0) {
      return InvalidArgumentError("fd " + std::to_string(epfd) +
                                  " is not open (AttachEpoll takes the loop's epoll fd)");
    }
    if (std::strcmp(link, "anon_inode:[eventpoll]") != 0) {
      return InvalidArgumentError("fd " + std::to_string(epfd) + " is " + link +
                                  ", not an epoll fd (anon_inode:[eventpoll])");
    }
    if (agent::internal::FindLoopByEpfd(epfd) != nullptr) {
      return FailedPreconditionError("epoll fd " + std::to_string(epfd) + " is watched already");
    }
    if (Status st = ResolveOptions(&options); !st.ok()) {
      return st;
    }
    std::function<void()> release;
    auto made = NewContext(nullptr, std::move(options), &release);
    if (!made.ok()) {
      return made.status();
    }
    std::shared_ptr<internal::LoopContext> ctx = std::move(*made);
    auto& s = ctx->state;
    static const std::string runtime = agent::internal::ThisProcessRuntime();
    std::snprintf(s.runtime, sizeof(s.runtime), "%s", runtime.c_str());
    // On the loop thread, inside a wait or before one: its identity now, and the loop counts as
    // running from here (epoll loops have no dispatch call to enter or leave).
    agent::internal::EnsureLoopThread(&s);
    const int64_t now = MonotonicNanos();
    s.dispatch_entered_ns.store(now, std::memory_order_relaxed);
    s.dispatch_hooked.store(true, std::memory_order_relaxed);
    s.in_dispatch.store(true, std::memory_order_release);
    if (Status st = ctx->epoll_probe.Start(&s, epfd); !st.ok()) {
      release();
      return st;
    }
    ctx->epfd_binding = internal::EpfdBinding::kNone;
    agent::internal::BindEpollFd(&s, epfd);
    ctx->runtime->Add(ctx);
    return std::unique_ptr<Agent>(new Agent(std::move(ctx)));
  } catch (const std::exception& e) {
    return InternalError(std::string("attach failed: ") + e.what());
  }
}

Agent::Agent(std::shared_ptr<internal::LoopContext> ctx) : ctx_(std::move(ctx)) {}

Agent::~Agent() {
  {
    std::lock_guard<std::mutex> lock(g_bases_mu);
    if (Aliases().erase(this) > 0) {
      return;  // the loop stays with the first attach's handle
    }
    auto it = Bases().find(static_cast<event_base*>(ctx_->state.base));
    if (it != Bases().end() && it->second.lock() == ctx_) {
      Bases().erase(it);
    }
  }
  try {
    ctx_->runtime->Remove(ctx_.get());
  } catch (...) {
  }
  ctx_->probe.Stop();
  ctx_->evwatch.Stop();
  ctx_->epoll_probe.Stop();
  if (ctx_->runtime->forked_child()) {
    // Inherited from the parent: the runtime is abandoned, and so is this context (leaked on
    // purpose; if even that allocation fails the process ends, which is safer than destroying
    // state whose locks another thread of the parent may hold).
    // NOLINTNEXTLINE(bugprone-unhandled-exception-at-new)
    new std::shared_ptr<internal::LoopContext>(std::move(ctx_));
    return;
  }
  agent::internal::UnregisterLoop(&ctx_->state);
  if (ctx_->slot >= 0 && ctx_->runtime->watchdog_process() != nullptr) {
    ctx_->runtime->watchdog_process()->ReleaseSlot(ctx_->slot);
  }
  ctx_->runtime.reset();  // the last agent stops the watchdog and the reporter here
}

const std::string& Agent::loop_name() const {
  if (ctx_->runtime) {
    ctx_->runtime->PullSnapshot(*ctx_);
  }
  return ctx_->snapshot.name;
}

LoopSnapshot Agent::Snapshot() const {
  LoopSnapshot out;
  if (ctx_->runtime) {
    ctx_->runtime->PullSnapshot(*ctx_);  // the watchdog process's findings
  }
  const auto& s = ctx_->state;
  out.service = ctx_->service;
  out.loop = ctx_->snapshot.Name();  // the watchdog may rename the loop after its thread
  out.tid = s.tid.load(std::memory_order_acquire);
  out.kind = agent::internal::KindName(s);
  out.runtime = s.runtime;
  out.boundary_source = agent::internal::BoundarySource(s);
  HistogramCounts h;
  s.delay_hist.Snapshot(&h);
  out.since_attach.count = h.total();
  h.set_max_ns(0);
  out.since_attach.p50 = std::chrono::nanoseconds(h.ValueAtQuantile(0.5));
  out.since_attach.p90 = std::chrono::nanoseconds(h.ValueAtQuantile(0.9));
  out.since_attach.p99 = std::chrono::nanoseconds(h.ValueAtQuantile(0.99));
  out.since_attach.p999 = std::chrono::nanoseconds(h.ValueAtQuantile(0.999));
  uint64_t max = 0;
  for (size_t i = h.counts().size(); i-- > 0;) {
    if (h.counts()[i] != 0) {
      max = HistBucketMid(i);
      break;
    }
  }
  out.since_attach.max = std::chrono::nanoseconds(max);
  out.iterations = s.iterations.load(std::memory_order_relaxed);
  {
    const auto& snap = ctx_->snapshot;
    std::lock_guard<std::mutex> lock(snap.mu);
    out.last_window = snap.last_window;
    out.recent_stalls.assign(snap.recent.begin(), snap.recent.end());
    out.ongoing = snap.ongoing;
    // The ongoing finding is refreshed at each re-sample; its age is current now.
    if (out.ongoing) {
      out.ongoing->duration_s = (RealtimeNanos() - out.ongoing->start_ns) / 1e9;
    }
    out.stalls_total = out.recent_stalls.size();
    if (snap.last_window) {
      out.stalls_total = std::max<uint64_t>(out.stalls_total, snap.last_window->stalls_total);
      out.since_attach.utilization = snap.last_window->utilization;
    }
  }
  out.sampling_status = ctx_->runtime ? ctx_->runtime->sampling_status() : "detached";
  if (ctx_->runtime) {
    out.findings_dropped = ctx_->runtime->findings_dropped();
  }
  {
    // With the watchdog in a process of its own, its reporter counts them: the last window says.
    std::lock_guard<std::mutex> lock(ctx_->snapshot.mu);
    if (ctx_->snapshot.last_window) {
      out.findings_dropped = std::max<uint64_t>(out.findings_dropped,
                                                ctx_->snapshot.last_window->findings_dropped_total);
    }
  }
  if (ctx_->runtime && ctx_->runtime->watchdog_process() != nullptr) {
    out.watchdog = "process";
    out.watchdog_pid = ctx_->runtime->watchdog_process()->pid();
  } else {
    out.watchdog = "thread";
  }
  return out;
}

}  // namespace stallwatch
