#pragma once
// The memory a host and its stallwatch-watchdog share (a memfd mapping, watchdog_process.h): its
// layout, the seqlocked texts published through it, and the futex words each side waits on.
//
// Threading: every field says who writes it. Texts are written by one writer and copied out by
// readers in either process (PublishText / ReadText); slot and watchdog states are atomics.

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "loop_state.h"
#include "watchdog/published_snapshot.h"

namespace stallwatch::internal {

inline constexpr uint32_t kRegionMagic = 0x53574450;  // "SWDP"
inline constexpr uint32_t kRegionVersion = 4;         // bumped whenever the region layout changes
inline constexpr int kMaxProcessLoops = 64;
inline constexpr size_t kSnapshotBytes = size_t{256} * 1024;

// Bytes published by one writer and copied out by readers in other processes (a seqlock: the
// sequence is odd while the writer is in the middle). Lives in a zero-filled mapping.
struct SharedText {  // NOLINT(cppcoreguidelines-pro-type-member-init)
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

// Constructed by the host in the zero-filled mapping, its fields filled in before the start.
struct RegionHeader {  // NOLINT(cppcoreguidelines-pro-type-member-init)
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
// Tells the other side something changed: increments `word` and wakes its waiters.
void Bump(std::atomic<uint32_t>* word);

// Watchdog process: writes a loop's snapshot as JSON into its slot; the oldest closed stalls are
// left out when it would not fit. A closed stall never changes, so the JSON of each is made once
// and kept while it is among the snapshot's recent stalls: a publish serializes the name, the
// ongoing stall and the last window, and copies the rest. (Serializing the 64 recent stalls of a
// Python loop, 4-8 KiB each, on every sample took the watchdog 20-250 ms a look, during which
// whole stalls went by unseen.)
//
// Threading: one writer per loop, on the watchdog thread; Publish() copies from `snap` under its
// lock and serializes outside it.
class SnapshotWriter {
 public:
  void Publish(const agent::internal::PublishedSnapshot& snap, SharedText* out);

 private:
  // The JSON of the stalls in the snapshot's `recent` at the last publish, oldest first.
  std::deque<std::pair<uint64_t, std::string>> recent_;
};

// As SnapshotWriter::Publish with nothing kept (a loop's first and last publish).
void PublishSnapshot(const agent::internal::PublishedSnapshot& snap, SharedText* out);
// Host: replaces `snap`'s contents with what the watchdog process published in `text` (nothing
// changes while it has published nothing readable).
void PullSnapshot(const SharedText& text, agent::internal::PublishedSnapshot* snap);

}  // namespace stallwatch::internal
