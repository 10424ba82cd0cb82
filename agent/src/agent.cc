#include "stallwatch/agent.h"

#include <event2/event.h>

#include <atomic>
#include <cstring>

#include "libevent_weak.h"
#include "platform/proc.h"
#include "runtime.h"
#include "stallwatch/common/clock.h"
#include "wait_hook.h"

namespace stallwatch {

namespace {
std::atomic<uint64_t> g_loop_counter{0};
}

StatusOr<std::unique_ptr<Agent>> Agent::Attach(event_base* base, Options options) {
  try {
    if (base == nullptr) return InvalidArgumentError("event_base is null");
    if (event_new == nullptr) return FailedPreconditionError("libevent is not loaded");
    if (options.stall_threshold < std::chrono::milliseconds(1)) {
      return InvalidArgumentError("stall_threshold must be at least 1ms");
    }
    if (options.probe_interval < std::chrono::microseconds(100)) {
      return InvalidArgumentError("probe_interval must be at least 100us");
    }
    if (options.report_interval < std::chrono::milliseconds(100)) {
      return InvalidArgumentError("report_interval must be at least 100ms");
    }
    auto ctx = std::make_shared<internal::LoopContext>();
    const uint64_t n = g_loop_counter.fetch_add(1);
    ctx->state.name = options.loop_name.empty() ? "loop-" + std::to_string(n) : options.loop_name;
    ctx->state.base = base;
    ctx->state.threshold_ns = options.stall_threshold.count();
    ctx->state.interval_ns = options.probe_interval.count();
    ctx->options = std::move(options);
    auto rt = internal::Runtime::Acquire(ctx->options);
    if (!rt.ok()) return rt.status();
    ctx->runtime = *rt;
    ctx->service = ctx->runtime->service();
    if (!agent::internal::RegisterLoop(&ctx->state)) {
      return ResourceExhaustedError("too many loops attached in this process (at most 256)");
    }
    if (Status st = ctx->probe.Start(&ctx->state); !st.ok()) {
      agent::internal::UnregisterLoop(&ctx->state);
      return st;
    }
    if (ctx->evwatch.Start(&ctx->state)) {
      ctx->epfd_tries = 1000;  // libevent >= 2.2: prepare/check watchers give the boundaries
    } else if (const char* method = event_base_get_method(base);
               method != nullptr && std::strcmp(method, "epoll") == 0) {
      const int epfd =
          agent::platform::FindEpollFdContaining(ctx->probe.timer_fd(), agent::platform::GetTid());
      if (epfd >= 0) agent::internal::BindEpollFd(&ctx->state, epfd);
    } else {
      ctx->epfd_tries = 1000;  // other backends: probe-only (docs/design.md)
    }
    ctx->runtime->Add(ctx);
    return std::unique_ptr<Agent>(new Agent(std::move(ctx)));
  } catch (const std::exception& e) {
    return InternalError(std::string("attach failed: ") + e.what());
  }
}

Agent::Agent(std::shared_ptr<internal::LoopContext> ctx) : ctx_(std::move(ctx)) {}

Agent::~Agent() {
  try {
    ctx_->runtime->Remove(ctx_.get());
  } catch (...) {
  }
  ctx_->probe.Stop();
  ctx_->evwatch.Stop();
  if (ctx_->runtime->forked_child()) {
    // Inherited from the parent: the runtime is abandoned, and so is this context.
    new std::shared_ptr<internal::LoopContext>(std::move(ctx_));
    return;
  }
  agent::internal::UnregisterLoop(&ctx_->state);
  ctx_->runtime.reset();  // the last agent stops the watchdog and the reporter here
}

const std::string& Agent::loop_name() const { return ctx_->state.name; }

LoopSnapshot Agent::Snapshot() const {
  LoopSnapshot out;
  const auto& s = ctx_->state;
  out.service = ctx_->service;
  {
    std::lock_guard<std::mutex> lock(ctx_->snap_mu);  // the name may be set from the thread
    out.loop = s.name;
  }
  out.tid = s.tid.load(std::memory_order_acquire);
  out.boundary_source = s.boundaries_seen.load() ? s.boundary_source : "probe";
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
    std::lock_guard<std::mutex> lock(ctx_->snap_mu);
    out.last_window = ctx_->last_window;
    out.recent_stalls.assign(ctx_->recent.begin(), ctx_->recent.end());
    out.ongoing = ctx_->ongoing;
    // The ongoing finding is refreshed at each re-sample; its age is current now.
    if (out.ongoing) out.ongoing->duration_s = (RealtimeNanos() - out.ongoing->start_ns) / 1e9;
    out.stalls_total = out.recent_stalls.size();
    if (ctx_->last_window) {
      out.stalls_total = std::max<uint64_t>(out.stalls_total, ctx_->last_window->stalls_total);
      out.since_attach.utilization = ctx_->last_window->utilization;
    }
  }
  out.sampling_status = ctx_->runtime ? ctx_->runtime->sampling_status() : "detached";
  return out;
}

}  // namespace stallwatch
