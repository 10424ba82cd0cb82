#pragma once
// The watchdog engine: scans the attached loops, follows each loop's stall detector, samples a
// stalled loop's thread (syscall, CPU share, stacks), builds and submits the findings and the
// delay windows, and publishes each loop's snapshot. The same engine runs as a thread in the
// host process (watchdog_thread.h) and in stallwatch-watchdog serving a host through a shared
// mapping (watchdog_process.h); what differs is its TargetThreads.
//
// Threading: Run() is the body of the watchdog thread. Add(), Remove() and Stop() may be called
// on any thread; they take the engine's lock, which the watchdog holds while it looks at loops
// (sampling, unwinding). sampling_status() never takes that lock: it may be called on a loop
// thread.

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ledger.h"
#include "platform/proc.h"
#include "python_frames.h"
#include "reporter.h"
#include "stall_detector.h"
#include "stallwatch/agent.h"
#include "unwinder.h"
#include "watchdog/delay_window.h"
#include "watchdog/loop_context.h"
#include "watchdog/region.h"
#include "watchdog/sampling_status.h"
#include "watchdog/self_clock.h"
#include "watchdog/stack_budget.h"
#include "watchdog/target_threads.h"

namespace stallwatch::internal {

// The watchdog's record of the stall being tracked on one loop.
struct StallTrack {
  uint64_t id = 0;
  int64_t start_mono_ns = 0;
  bool estimated = false;
  bool reported = false;
  int64_t base_mono_ns = 0;
  int64_t base_cpu_ns = -1;
  int64_t base_run_delay_ns = -1;
  int64_t base_steal_ns = -1;  // TargetThreads::StealPerCpu at the baseline
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
    std::vector<agent::PyFrameInfo>
        python;  // a Python loop's frames at the sample, innermost first
  };
  std::map<std::vector<uint64_t>, StackAgg> stacks;
  int stack_attempts = 0;
  uint64_t samples_failed = 0;
  bool budget_checked = false;
  bool stacks_allowed = false;
  std::string sampling_note;
};

// The engine's state of one loop. Owned by the engine, used under its lock.
struct LoopWatch {
  // How often the watchdog looks for an epoll fd attach could not bind.
  static constexpr int kMaxEpfdSearches = 10;

  LoopWatch(std::shared_ptr<LoopContext> c, const agent::internal::DetectorConfig& dc)
      : ctx(std::move(c)), detector(dc) {}

  std::shared_ptr<LoopContext> ctx;
  agent::internal::StallDetector detector;
  std::optional<StallTrack> track;
  uint64_t next_stall_id = 1;
  agent::internal::DelayWindow window;
  uint64_t stalls_total = 0;
  uint64_t stack_samples_total = 0;
  agent::internal::StackBudget stack_budget;
  bool named = false;              // final name chosen (from the thread, or not wanted)
  bool emitted_finding = false;    // after the first finding the name no longer changes
  bool announced = false;          // the reporter was told of the loop (Reporter::Announce)
  int64_t attached_ns = 0;         // when Add() took the loop
  int64_t last_tick_cpu_ns = -1;   // loop thread CPU clock at the previous watchdog look
  uint64_t long_seq_seen = 0;      // long busy periods already observed
  uint64_t long_periods_lost = 0;  // overwritten in the ring before the watchdog looked
  int epfd_searches = 0;           // epoll fd searches so far (EpfdBinding::kSearch)
  int64_t epfd_next_search_ns = 0;
  agent::internal::ThreadFiles thread_files;  // the loop thread's, kept open
  // The blocking-call ledger read so far, and its call sites once symbolized (at most
  // kLedgerSlots of them: a site keeps its table entry for the loop's life).
  agent::internal::LedgerCursor ledger_cursor;
  std::unordered_map<uint64_t, Frame> ledger_sites;
  SnapshotWriter snapshot_writer;  // a watchdog process's: the slot's snapshot
};

struct WatchdogConfig {
  std::string service;
  SamplingMode sampling = SamplingMode::kOn;
  int64_t mono_to_real_ns = 0;             // realtime minus monotonic, for the findings' timestamps
  agent::internal::SamplingStatus status;  // at start (why stacks are unavailable, if so)
};

class Watchdog {
 public:
  // `reporter` outlives the engine.
  Watchdog(WatchdogConfig config, std::unique_ptr<agent::internal::TargetThreads> target,
           agent::internal::Reporter* reporter);
  ~Watchdog();  // after Run() returned (or was never called)
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Any thread. Starts watching the loop (its options are resolved).
  void Add(const std::shared_ptr<LoopContext>& ctx);
  // Any thread. Closes an ongoing stall and emits the last delay window of the loop, then
  // forgets it.
  void Remove(LoopContext* ctx);
  // Any thread (the process exits: ExitFlush, runtime.cc). As Remove, for every loop without
  // hooks, which stays watched: a stall it reported is closed (estimated), its window so far
  // is emitted. Hooks are the host's code, which is exiting: their loops are left as they are.
  void FlushForExit();
  // Any thread; never waits for the watchdog's look at a loop.
  std::string sampling_status() const;
  // The watchdog thread: looks at the loops until Stop().
  void Run();
  // Any thread: Run() returns soon after.
  void Stop();
  // Called on the watchdog thread, under the engine's lock, before each look at a loop: a test
  // holds the watchdog there as a long sample or unwind would.
  void SetLookHookForTest(std::function<void()> hook);

 private:
  using LoopObservation = agent::internal::LoopObservation;
  using DetectorEvent = agent::internal::DetectorEvent;

  // All below but status()/set_status() (own lock, any thread, the warm-up thread included):
  // on the watchdog thread, or on a host thread in Remove(); always under mu_.

  // Both return when the watchdog must look again (see StallDetector::NextLookNs).
  int64_t Tick(int64_t now);
  int64_t ProcessLoop(LoopWatch& w, int64_t now);
  void BindEpollFd(LoopWatch& w, int64_t now);
  void ReadLongPeriods(LoopWatch& w, LoopObservation* o);
  void NameFromThread(LoopWatch& w, pid_t tid);
  void OnBaseline(LoopWatch& w, const DetectorEvent& e, int64_t now);
  void Sample(LoopWatch& w, int64_t now, bool with_stack);
  void NoteSyscall(LoopWatch& w, StallTrack& t, pid_t tid, const agent::platform::SyscallInfo& sys);
  // recent_cpu: the loop thread's share of time on a CPU or queued for one since the previous
  // look (-1 if unknown).
  void TakeStack(LoopWatch& w, StallTrack& t, const agent::platform::SyscallInfo* sys,
                 double recent_cpu);
  StallFinding BuildFinding(LoopWatch& w, const StallTrack& t, int64_t end_mono, bool ongoing,
                            int64_t now);
  void CloseStall(LoopWatch& w, int64_t end_mono, bool estimated, int64_t now);
  void EmitWindow(LoopWatch& w, int64_t now);
  // The loop's blocking calls since the previous window (kind "calls"), when it made any.
  void EmitCalls(LoopWatch& w, int64_t now, double window_s);
  // Once the stall's first stack is in: whether its stacks are reported (a new signature
  // always; a known one within the budget) or only counted.
  void DecideStackBudget(LoopWatch& w, StallTrack& t, int64_t now);
  // The signature of a stack (its innermost host frames' functions); `top_frame` gets the first
  // named frame outside the system libraries.
  uint64_t StackSignature(const std::vector<agent::internal::RawFrame>& frames,
                          std::string* top_frame);
  // Publishes the loop's snapshot where a host reads it (a watchdog process's slot).
  static void Publish(LoopWatch& w);
  int64_t LoopCpu(LoopWatch& w) const;
  // The watchdog's own clocks: wall, CPU and run-queue wait.
  agent::internal::OwnClocks ReadOwnClocks() const;
  // At the watchdog's own wake-up or wait (watchdog thread, under the lock): a full reading where
  // the span since `last` (`intended_ns` of it a chosen sleep) may hold a pause or the last full
  // reading is kFreshClocks old, else `last` with the monotonic time `mono_ns` (*full = false).
  agent::internal::OwnClocks ReadOwnClocksIfUseful(const agent::internal::OwnClocks& last,
                                                   int64_t mono_ns, int64_t intended_ns,
                                                   bool* full);
  agent::internal::SamplingStatus status() const;
  void set_status(agent::internal::SamplingStatus s);

  const WatchdogConfig config_;
  const std::unique_ptr<agent::internal::TargetThreads> target_;
  agent::internal::Reporter* const reporter_;
  agent::internal::Unwinder unwinder_;
  // Set (release) by the warm-up thread once the unwinder is initialised; the watchdog only uses
  // the unwinder after seeing it (acquire). Detection never waits for the warm-up.
  std::atomic<bool> unwinder_ok_{false};
  std::thread warm_thread_;
  std::atomic<bool> warm_cancel_{false};

  // Its own lock: read by Snapshot() on any thread, so never held across a sample.
  mutable std::mutex status_mu_;
  agent::internal::SamplingStatus status_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<std::unique_ptr<LoopWatch>> loops_;
  std::function<void()> look_hook_for_test_;

  // Watchdog thread only.
  std::unique_ptr<agent::platform::ProcFile> own_schedstat_;  // the watchdog's table
  pid_t watchdog_tid_ = 0;
  clockid_t watchdog_cpu_clock_{};
  bool watchdog_cpu_clock_ok_ = false;
  // Guarded by mu_ (Remove accounts the current wait too).
  bool waiting_ = false;
  agent::internal::OwnClocks wait_start_;
  int64_t wait_tick_ns_ = 0;
  // The monotonic time of the last full reading of the watchdog's clocks (ReadOwnClocks).
  int64_t clocks_read_ns_ = 0;
  agent::internal::SelfClock self_clock_;
  // Python frames (python_frames.h), made at the first sample of a Python loop; its error, once
  // there was one, is the stalls' sampling note.
  std::optional<agent::PythonFrameReader> py_reader_;
  std::string py_reader_error_;
  bool py_reader_tried_ = false;
  // The Python stack of a sampled thread whose PyThreadState is `tstate`; empty (with a note in
  // the stall) when there is none or it cannot be read.
  std::vector<agent::PyFrameInfo> ReadPythonStack(uint64_t tstate, StallTrack& t);
  // The Python frame reader of the watched process, made at its first use (a Python loop's first
  // sample); nullptr when there is none (the reason is in the stall's sampling note).
  const agent::PythonFrameReader* PyReader(StallTrack& t);
  // The same without a stall: null when Python frames are unavailable.
  const agent::PythonFrameReader* PyReaderOrNull();
  // A ledger row's Python caller (row.py_code != 0) as a frame of kind "python"; false when its
  // code object does not check out.
  bool PythonCallSite(const agent::internal::LedgerRow& row, Frame* site);
  // For a Python loop blocked in futex(uaddr): "GIL held by thread N (name) in fn (file:line)"
  // when uaddr is the GIL's and another thread holds it, else "".
  std::string GilTarget(LoopWatch& w, StallTrack& t, uint64_t uaddr);
};

}  // namespace stallwatch::internal
