#include "watchdog/watchdog_thread.h"

#include <chrono>
#include <utility>

#include "unwinder.h"

namespace stallwatch::internal {

ThreadWatchdog::ThreadWatchdog(const Options& options, const agent::internal::Endpoint& endpoint,
                               WatchdogConfig config,
                               std::unique_ptr<agent::internal::TargetThreads> target) {
  reporter_ = std::make_unique<agent::internal::Reporter>(
      agent::internal::MakeSink(endpoint, options.queue_capacity), options.queue_capacity);
  if (config.sampling != SamplingMode::kOff) {
    // file:line are resolved on the reporter thread with a libdw session of its own: indexing a
    // large debug file (e.g. libc's, ~100 ms) must not hold up stall detection.
    auto lines = std::make_shared<agent::internal::LineResolver>();
    reporter_->SetEnricher([lines](agent::internal::Finding& f) {
      if (auto* s = std::get_if<StallFinding>(&f)) {
        for (auto& st : s->stacks) {
          lines->AddLines(&st);
        }
      } else if (auto* c = std::get_if<CallsFinding>(&f)) {
        // Call sites as one stack of frames, so they get file:line the same way; an empty
        // first frame (the innermost is looked up at its pc, the others as return addresses).
        Stack sites;
        sites.frames.emplace_back();
        for (const auto& e : c->calls) {
          sites.frames.push_back(e.site);
        }
        lines->AddLines(&sites);
        for (size_t i = 0; i < c->calls.size() && i + 1 < sites.frames.size(); ++i) {
          c->calls[i].site = std::move(sites.frames[i + 1]);
        }
      }
    });
  }
  engine_ = std::make_unique<Watchdog>(std::move(config), std::move(target), reporter_.get());
  thread_ = std::thread([engine = engine_.get()] { engine->Run(); });
}

ThreadWatchdog::~ThreadWatchdog() {
  engine_->Stop();
  if (thread_.joinable()) {
    thread_.join();
  }
  engine_.reset();    // joins the unwinder's warm-up thread
  reporter_.reset();  // delivers what it can, joins its thread
}

void ThreadWatchdog::Add(const std::shared_ptr<LoopContext>& ctx) {
  const auto& o = ctx->options;
  if (o.on_stall || o.on_delay) {
    reporter_->SetHooks(ctx->snapshot.Name(), {o.on_stall, o.on_delay});
  }
  engine_->Add(ctx);
}

void ThreadWatchdog::Remove(LoopContext* ctx) {
  engine_->Remove(ctx);
  // The loop's last findings go through its hooks before detach returns; after it, the hooks
  // are never called again (bounded: a hook that hangs delays detach by at most 1 s).
  if (ctx->options.on_stall || ctx->options.on_delay) {
    reporter_->FlushAndRemoveHooks(ctx->snapshot.Name(), std::chrono::seconds(1));
  }
}

void ThreadWatchdog::FlushForExit(std::chrono::milliseconds timeout) {
  engine_->FlushForExit();
  reporter_->Drain(timeout);
}

}  // namespace stallwatch::internal
