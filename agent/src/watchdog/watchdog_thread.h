#pragma once
// The watchdog as a thread of the process it runs in: the engine (engine.h) on a thread of its
// own, with a reporter. The host's watchdog when it is not a process; also what runs inside
// stallwatch-watchdog, where the engine's threads are the host's (TargetThreads::Remote).
//
// Threading: every method may be called on any thread. The destructor stops and joins the
// watchdog thread, then the reporter (which delivers what it can).

#include <memory>
#include <thread>

#include "reporter.h"
#include "stallwatch/agent.h"
#include "watchdog/backend.h"
#include "watchdog/engine.h"

namespace stallwatch::internal {

class ThreadWatchdog final : public WatchdogBackend {
 public:
  // Starts the reporter (for `endpoint`, `options.queue_capacity`) and the watchdog thread.
  ThreadWatchdog(const Options& options, const agent::internal::Endpoint& endpoint,
                 WatchdogConfig config, std::unique_ptr<agent::internal::TargetThreads> target);
  ~ThreadWatchdog() override;
  ThreadWatchdog(const ThreadWatchdog&) = delete;
  ThreadWatchdog& operator=(const ThreadWatchdog&) = delete;

  // Add: on a host thread when the loop has hooks (the hook thread is created there).
  void Add(const std::shared_ptr<LoopContext>& ctx) override;
  void Remove(LoopContext* ctx) override;
  void FlushForExit(std::chrono::milliseconds timeout) override;
  std::string sampling_status() const override { return engine_->sampling_status(); }
  uint64_t findings_dropped() const override { return reporter_->dropped(); }
  void PullSnapshot(LoopContext& /*c*/) const override {}
  void SetLookHookForTest(const std::function<void()>& hook) override {
    engine_->SetLookHookForTest(hook);
  }

  Watchdog& engine() { return *engine_; }

 private:
  std::unique_ptr<agent::internal::Reporter> reporter_;
  std::unique_ptr<Watchdog> engine_;
  std::thread thread_;
};

}  // namespace stallwatch::internal
