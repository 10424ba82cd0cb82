#pragma once
// The process-wide part of the agent: one watchdog thread for all attached loops, one reporter,
// the sampling signal handler and the unwinder. Created with the first attached loop, destroyed
// (threads joined, signal disposition restored) with the last.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "classifier.h"
#include "evwatch_hook.h"
#include "loop_state.h"
#include "platform/proc.h"
#include "platform/signal_sampler.h"
#include "probe.h"
#include "reporter.h"
#include "stall_detector.h"
#include "stallwatch/agent.h"
#include "unwinder.h"
#include "watchdog_process.h"

namespace stallwatch::internal {

class Runtime;

// The watchdog's record of the stall being tracked on one loop.
struct StallTrack {
  uint64_t id = 0;
  int64_t start_mono_ns = 0;
  bool estimated = false;
  bool reported = false;
  int64_t base_mono_ns = 0;
  int64_t base_cpu_ns = -1;
  int64_t base_run_delay_ns = -1;
  std::map<std::string, int> syscalls;
  std::string last_syscall;
  std::string fd_target;
  bool seen_running = false;
  int samples = 0;
  int64_t last_look_mono_ns = 0;  // previous Sample(): for the recent CPU share
  int64_t last_look_cpu_ns = -1;
  int64_t last_look_run_delay_ns = -1;
  struct StackAgg {
    uint64_t count = 0;
    std::string method;
    std::vector<agent::internal::RawFrame> frames;
  };
  std::map<std::vector<uint64_t>, StackAgg> stacks;
  int stack_attempts = 0;
  uint64_t samples_failed = 0;
  bool budget_checked = false;
  bool stacks_allowed = false;
  std::string sampling_note;
};

// A stack signature a loop has seen (the stack budget goes by signature).
struct KnownStack {
  uint64_t signature = 0;
  uint64_t stall_id = 0;  // the first stall with it, which was reported with its stacks
  std::string top_frame;  // its first frame outside the system libraries, for the note
  uint64_t repeats_suppressed = 0;
};

class LoopContext {
 public:
  // `shared`: the loop's state in the watchdog process's mapping; nullptr: owned here.
  explicit LoopContext(agent::internal::LoopState* shared = nullptr)
      : owned_state(shared ? nullptr : new agent::internal::LoopState()),
        state(shared ? *shared : *owned_state) {}
  LoopContext(const LoopContext&) = delete;
  LoopContext& operator=(const LoopContext&) = delete;

  Options options;
  std::string service;
  std::unique_ptr<agent::internal::LoopState> owned_state;
  agent::internal::LoopState& state;
  std::string name;  // written under snap_mu (the watchdog may name the loop after its thread)
  int slot = -1;     // host: the loop's slot in the watchdog process's mapping
  RegionSlot* served = nullptr;  // watchdog process: the host's slot this context serves
  agent::internal::Probe probe;
  agent::internal::EvwatchHook evwatch;
  std::shared_ptr<Runtime> runtime;

  // Watchdog thread only (under Runtime::mu_).
  std::optional<agent::internal::StallDetector> detector;
  std::optional<StallTrack> track;
  uint64_t next_stall_id = 1;
  HistogramCounts prev_delay, prev_iter;
  int64_t window_start_ns = 0;
  int64_t prev_busy_ns = 0;
  int64_t prev_probe_busy_ns = 0;
  uint64_t prev_iterations = 0;
  uint64_t max_delay_ever_ns = 0;
  uint64_t stalls_total = 0;
  uint64_t stack_samples_total = 0;
  uint64_t reports_suppressed_total = 0;
  double stack_tokens = 0;
  std::deque<KnownStack> known_stacks;  // least recently seen first, at most kMaxKnownStacks
  int64_t tokens_refilled_ns = 0;
  bool named = false;              // final name chosen (from the thread, or not wanted)
  bool emitted_finding = false;    // after the first finding the name no longer changes
  bool announced = false;          // the reporter was told of the loop (Reporter::Announce)
  int64_t attached_ns = 0;         // when Add() took the loop
  int64_t last_tick_cpu_ns = -1;   // loop thread CPU clock at the previous watchdog look
  uint64_t long_seq_seen = 0;      // long busy periods already observed
  uint64_t long_periods_lost = 0;  // overwritten in the ring before the watchdog looked
  int epfd_tries = 0;
  // Watchdog process: the loop thread's schedstat, kept open.
  std::unique_ptr<agent::platform::ProcFile> schedstat_file;
  pid_t schedstat_tid = 0;
  int64_t epfd_next_try_ns = 0;

  // Snapshot, guarded by snap_mu.
  mutable std::mutex snap_mu;
  std::deque<StallFinding> recent;
  std::optional<StallFinding> ongoing;
  std::optional<DelayFinding> last_window;
};

class Runtime {
 public:
  // Returns the process's runtime, creating it (with `options`' process-wide settings) if none.
  static StatusOr<std::shared_ptr<Runtime>> Acquire(const Options& options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Any thread.
  void Add(const std::shared_ptr<LoopContext>& ctx);
  // Any thread. Closes an ongoing stall and emits the last delay window of the loop.
  void Remove(LoopContext* ctx);
  std::string sampling_status() const;
  // Findings the reporter of this process dropped so far (0 with a watchdog process: its
  // reporter counts them). Any thread.
  uint64_t findings_dropped() const { return reporter_ ? reporter_->dropped() : 0; }
  // Host of a watchdog process (nullptr: the watchdog is a thread here).
  WatchdogProcess* watchdog_process() const { return watchdog_process_.get(); }
  // Host of a watchdog process: copies the loop's published snapshot (name, recent and ongoing
  // stalls, last window) into `c`.
  void PullSnapshot(LoopContext& c) const;
  // In stallwatch-watchdog, before the first Acquire: this process serves host `pid`, whose
  // handler for `sample_signal` (0: none) takes the stacks.
  static void ServeHost(pid_t pid, int sample_signal);
  // Watchdog process: publishes `c`'s snapshot into its slot (after any change).
  void PublishSnapshot(LoopContext& c);
  // In a child after fork(): the watchdog and reporter threads do not exist there and the locks
  // may be held forever, so this runtime is abandoned (never destroyed, never locked).
  void MarkForkedChild() { forked_child_.store(true); }
  bool forked_child() const { return forked_child_.load(); }
  const std::string& service() const { return service_; }

 private:
  Runtime() = default;
  // Watchdog thread.
  void Run();
  // Both return when the watchdog must look again (see StallDetector::NextLookNs).
  int64_t Tick(int64_t now);
  int64_t ProcessLoop(LoopContext& c, int64_t now);
  void NameFromThread(LoopContext& c, pid_t tid);
  void OnBaseline(LoopContext& c, const agent::internal::DetectorEvent& e, int64_t now);
  void Sample(LoopContext& c, int64_t now, bool with_stack);
  // recent_cpu: the loop thread's share of time on a CPU or queued for one since the previous
  // look (-1 if unknown).
  void TakeStack(LoopContext& c, StallTrack& t, const agent::platform::SyscallInfo* sys,
                 double recent_cpu);
  StallFinding BuildFinding(LoopContext& c, const StallTrack& t, int64_t end_mono, bool ongoing,
                            int64_t now);
  void CloseStall(LoopContext& c, int64_t end_mono, bool estimated, int64_t now);
  void EmitWindow(LoopContext& c, int64_t now);
  int64_t SuspendedOverlap(int64_t from, int64_t to) const;
  // The watchdog's own clocks: wall, CPU and run-queue wait.
  struct OwnClocks {
    int64_t mono = 0;
    int64_t cpu = 0;
    int64_t run_delay = 0;
  };
  OwnClocks ReadOwnClocks() const;
  // Records a suspension when, between `from` and `to`, the watchdog was neither running, nor
  // queued for a CPU, nor in a sleep it chose (`intended_sleep_ns`) for more than 20 ms: the
  // whole process was paused.
  void AccountOwnTime(const OwnClocks& from, const OwnClocks& to, int64_t intended_sleep_ns);
  bool TakeStackToken(LoopContext& c, int64_t now);
  // Once the stall's first stack is in: whether its stacks are reported (a new signature
  // always; a known one within the budget) or only counted.
  void DecideStackBudget(LoopContext& c, StallTrack& t, int64_t now);
  // The signature of a stack (its innermost host frames' functions); `top_frame` gets the first
  // named frame outside the system libraries.
  uint64_t StackSignature(const std::vector<agent::internal::RawFrame>& frames,
                          std::string* top_frame);

  // The loop thread's CPU time (ns), -1 if unknown. Watchdog thread (or under mu_).
  int64_t LoopCpu(LoopContext& c) const;

  std::unique_ptr<WatchdogProcess> watchdog_process_;
  bool serving_ = false;   // this is stallwatch-watchdog, serving a host process
  int remote_signal_ = 0;  // serving: the host's sampling signal (0: none)
  std::string service_;
  SamplingMode sampling_ = SamplingMode::kOn;
  int64_t mono_to_real_ns_ = 0;
  std::unique_ptr<agent::internal::Reporter> reporter_;
  agent::platform::SignalSampler sampler_;
  agent::internal::Unwinder unwinder_;
  // Set (release) by the warm-up thread once the unwinder is initialised; the watchdog only uses
  // the unwinder after seeing it (acquire). Detection never waits for the warm-up.
  std::atomic<bool> unwinder_ok_{false};
  std::thread warm_thread_;
  std::atomic<bool> warm_cancel_{false};
  std::string sampling_status_ = "ok";

  std::atomic<bool> forked_child_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<std::shared_ptr<LoopContext>> loops_;
  std::thread thread_;

  // Watchdog thread only.
  bool file_table_private_ = false;                           // see platform::DetachFileTable
  std::unique_ptr<agent::platform::ProcFile> own_schedstat_;  // the watchdog's table
  pid_t watchdog_tid_ = 0;
  clockid_t watchdog_cpu_clock_{};
  bool watchdog_cpu_clock_ok_ = false;
  // Guarded by mu_ (Remove accounts the current wait too).
  bool waiting_ = false;
  OwnClocks wait_start_;
  int64_t wait_tick_ns_ = 0;
  int64_t intended_sleep_ns_ = 0;  // sleeps inside processing (waiting for a signal sample)
  std::deque<std::pair<int64_t, int64_t>> suspended_;  // [from, to) windows, newest last
};

}  // namespace stallwatch::internal
