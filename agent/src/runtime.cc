#include "runtime.h"

#include <pthread.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "log.h"
#include "platform/proc.h"
#include "reporter.h"
#include "stallwatch/common/clock.h"
#include "wait_hook.h"
#include "watchdog/engine.h"
#include "watchdog/target_threads.h"
#include "watchdog/watchdog_thread.h"

namespace stallwatch::internal {

using agent::internal::SamplingState;
namespace platform = agent::platform;

namespace {

std::mutex g_runtime_mu;
std::weak_ptr<Runtime> g_runtime;

std::string ProgramName() {
  std::string comm;
  if (platform::ReadSmallFile("/proc/self/comm", &comm)) {
    while (!comm.empty() && (comm.back() == '\n' || comm.back() == ' ')) {
      comm.pop_back();
    }
    if (!comm.empty()) {
      return comm;
    }
  }
  return "unknown";
}

// Where the watchdog runs: in stallwatch-watchdog when WatchdogProcess::Wanted says so and it
// starts, else (and when it cannot start, with a warning saying why) as a thread here.
std::unique_ptr<WatchdogBackend> StartWatchdog(const Options& options,
                                               const agent::internal::Endpoint& endpoint,
                                               WatchdogConfig config,
                                               platform::SignalSampler* sampler) {
  std::string why;
  if (WatchdogProcess::Wanted(options, &why)) {
    auto wp = WatchdogProcess::Start(
        options, config.service, sampler->available() ? sampler->signo() : 0, config.status, &why);
    if (wp) {
      return wp;
    }
    agent::internal::LogWarn("watchdog process unavailable ({}); the watchdog runs as a thread",
                             why);
  }
  return std::make_unique<ThreadWatchdog>(options, endpoint, std::move(config),
                                          agent::internal::TargetThreads::Own(sampler));
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
    if (rt->watchdog_process() != nullptr) {
      rt->watchdog_process()->PrivatizeInChild();
    }
    new std::shared_ptr<Runtime>(rt);  // abandoned: its threads do not exist in this process
  }
  g_runtime.reset();
  agent::internal::UnregisterAllLoops();
  g_runtime_mu.unlock();
}

namespace {

// exit(): a program that ends without detaching its loops (every program under the shim) would
// lose the stalls not yet delivered and the windows since the last report. Runs before the
// static destructors; threads of the program may still run, so the runtime is only flushed,
// not destroyed. Bounded: an endpoint that takes nothing is not waited for.
void FlushAtExit() {
  std::shared_ptr<Runtime> rt;
  if (g_runtime_mu.try_lock()) {  // a thread of the program may hold it forever now
    rt = g_runtime.lock();
    g_runtime_mu.unlock();
  }
  if (rt) {
    rt->FlushForExit(std::chrono::milliseconds(500));
  }
}

}  // namespace

void Runtime::FlushForExit(std::chrono::milliseconds timeout) {
  if (forked_child()) {
    return;  // the parent's runtime: its threads do not exist here
  }
  try {
    watchdog_->FlushForExit(timeout);
  } catch (...) {
    // Best effort at exit.
  }
}

StatusOr<std::shared_ptr<Runtime>> Runtime::Acquire(const Options& options) {
  static const bool atfork = [] {
    pthread_atfork(PrepareFork, ParentAfterFork, ChildAfterFork);
    std::atexit(FlushAtExit);
    return true;
  }();
  (void)atfork;
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  if (auto rt = g_runtime.lock()) {
    return rt;
  }
  std::shared_ptr<Runtime> rt(new Runtime());
  rt->service_ = options.service.empty() ? ProgramName() : options.service;
  WatchdogConfig config;
  config.service = rt->service_;
  config.sampling = options.sampling.value_or(SamplingMode::kOn);
  config.mono_to_real_ns = RealtimeNanos() - MonotonicNanos();
  const std::string endpoint_text = options.endpoint.empty() ? kDefaultEndpoint : options.endpoint;
  auto endpoint = agent::internal::ParseEndpoint(endpoint_text);
  if (!endpoint.ok()) {
    return endpoint.status();
  }
  endpoint->token_file = options.token_file;
  if (config.sampling == SamplingMode::kOff) {
    config.status = {SamplingState::kOff, ""};
  } else {
    const int signo =
        options.sample_signal != 0 ? options.sample_signal : platform::DefaultSampleSignal();
    if (Status st = rt->sampler_.Install(signo); !st.ok()) {
      config.status = {SamplingState::kRunningStacksUnavailable, st.message()};
      agent::internal::LogWarn("{}", SamplingStatusText(config.status));
    }
  }
  rt->watchdog_ = StartWatchdog(options, *endpoint, std::move(config), &rt->sampler_);
  g_runtime = rt;
  return rt;
}

Runtime::~Runtime() {
  watchdog_.reset();  // stops it (no signal is sent after this) and joins or reaps it
  sampler_.Uninstall();
}

void Runtime::Remove(LoopContext* ctx) {
  if (forked_child()) {
    return;
  }
  watchdog_->Remove(ctx);
}

}  // namespace stallwatch::internal
