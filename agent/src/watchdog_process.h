#pragma once
// The watchdog in a process of its own (docs/design.md, "Watchdog process").
//
// Any thread makes a program multi-threaded for good: glibc leaves its single-threaded fast
// paths (malloc without arena locks, syscalls without cancellation bookkeeping, unlocked stdio)
// and a single-threaded evhttp server pays ~1 % more CPU per request for it. So for a program
// that has never had a second thread when the agent attaches (and sets no hooks), the watchdog,
// the reporter and the unwinder run in `stallwatch-watchdog`, a small executable started with
// clone(CLONE_VM | CLONE_VFORK) + execve (no copy of the host's address space, no SIGCHLD: the
// host's wait() never sees it). Host and watchdog share one memfd mapping: the loops' state
// (written by the loop thread exactly as in-process), per-loop configuration, and what the
// watchdog publishes back (snapshots, sampling status). The watchdog reads the host's threads
// through /proc/PID, signals them with tgkill for stacks (the handler stays in the host), and
// exits when the host asks it to or when the host is gone (pidfd).
//
// Threading (host side): all calls under the runtime's lock, or on the loop thread as noted.

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "loop_state.h"
#include "stallwatch/agent.h"

namespace stallwatch::internal {

inline constexpr uint32_t kRegionMagic = 0x53574450;  // "SWDP"
inline constexpr uint32_t kRegionVersion = 2;         // bumped whenever the region layout changes
inline constexpr int kMaxProcessLoops = 64;
inline constexpr size_t kSnapshotBytes = 256 * 1024;

// Bytes published by one writer and copied out by readers in other processes (a seqlock: the
// sequence is odd while the writer is in the middle).
struct SharedText {
  std::atomic<uint64_t> seq{0};
  std::atomic<uint32_t> len{0};
  char bytes[kSnapshotBytes];
};

struct RegionSlot {
  enum State : int { kFree = 0, kAttaching = 1, kActive = 2, kDetaching = 3, kReleased = 4 };
  std::atomic<int> state{kFree};
  // Written by the host before kAttaching.
  char name[256];
  int64_t threshold_ns;
  int64_t report_interval_ns;
  int max_stack_reports_per_minute;
  bool name_from_thread;
  int probe_fd;
  bool bind_epfd;       // the watchdog looks for the loop's epoll fd (attach could not bind it)
  uint64_t generation;  // bumped at each attach into this slot
  agent::internal::LoopState loop;
  // Written by the watchdog process: the snapshot JSON (name, recent, ongoing, last_window).
  SharedText snapshot;
};

struct RegionHeader {
  uint32_t magic;
  uint32_t version;
  int32_t host_pid;
  std::atomic<uint32_t> to_watchdog{0};  // futex word: the host changed something
  std::atomic<uint32_t> to_host{0};      // futex word: the watchdog process answered
  enum WatchdogState : int { kStarting = 0, kRunning = 1, kStopRequested = 2, kExited = 3 };
  std::atomic<int> watchdog_state{kStarting};
  // Process-wide settings (host → watchdog).
  char service[256];
  char endpoint[1024];
  char token_file[1024];
  char own_module[1024];  // the host's copy of the agent (left out of stacks)
  int sampling;           // SamplingMode
  int sample_signal;      // installed in the host; 0: none
  uint64_t queue_capacity;
  // Watchdog → host.
  SharedText sampling_status;
};

struct Region {
  RegionHeader header;
  RegionSlot slots[kMaxProcessLoops];
};

// Seqlock writer/reader over SharedText. Write truncates to kSnapshotBytes.
void PublishText(SharedText* t, const std::string& text);
std::string ReadText(const SharedText& t);

// Futex helpers on shared (not process-private) words.
void FutexWakeAll(std::atomic<uint32_t>* word);
// Waits while *word == seen, at most timeout_ns.
void FutexWait(std::atomic<uint32_t>* word, uint32_t seen, int64_t timeout_ns);

// Host side: the watchdog process of this host.
class WatchdogProcess {
 public:
  // Whether the runtime should run its watchdog in a process, for these first options. When
  // not, `why` says why (for the status line; empty for the plain thread default).
  static bool Wanted(const Options& options, std::string* why);
  // Starts the process and waits (up to 5 s) until it runs. nullptr on failure (`why` set).
  static std::unique_ptr<WatchdogProcess> Start(const Options& options, const std::string& service,
                                                int sample_signal, std::string* why);
  ~WatchdogProcess();  // asks it to stop, waits for it (bounded), reaps it
  WatchdogProcess(const WatchdogProcess&) = delete;
  WatchdogProcess& operator=(const WatchdogProcess&) = delete;

  // A free slot with a freshly constructed LoopState, or -1 when all are taken.
  int AllocateSlot();
  agent::internal::LoopState* loop_state(int slot) { return &region_->slots[slot].loop; }
  // Hands the slot to the watchdog process (after the probe started).
  void Activate(int slot, const std::string& name, const Options& o, int probe_fd, bool bind_epfd);
  // Asks the watchdog process to close the loop (its last window, an ongoing stall) and waits
  // up to 2 s for it. The loop thread may go on writing until ReleaseSlot.
  void Detach(int slot);
  // After the loop is unregistered: the slot can be reused.
  void ReleaseSlot(int slot);
  std::string Snapshot(int slot) const { return ReadText(region_->slots[slot].snapshot); }
  std::string sampling_status() const;
  pid_t pid() const { return pid_; }
  // In a child after fork(): the mapping becomes private memory of the child (same contents,
  // same address), so the child's copies of the loops never write into the parent's.
  void PrivatizeInChild();

 private:
  WatchdogProcess() = default;
  bool WaitFor(const std::atomic<int>& v, int want, int64_t timeout_ns);

  Region* region_ = nullptr;
  size_t region_size_ = 0;
  pid_t pid_ = -1;
  int sample_signal_ = 0;
  std::mutex mu_;
  bool reserved_[kMaxProcessLoops] = {};  // slots handed out by AllocateSlot (host side)
};

// Watchdog side: main() of stallwatch-watchdog.
int WatchdogProcessMain(int argc, char** argv);

}  // namespace stallwatch::internal
