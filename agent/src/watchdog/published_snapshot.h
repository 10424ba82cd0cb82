#pragma once
// What the watchdog publishes of one loop for Agent::Snapshot(): its name, its recent and ongoing
// stalls and its last delay window.
//
// Threading: written by the watchdog (thread, or on the host's side the copy pulled from a
// watchdog process), read by any thread; every access holds `mu`, which is only ever held for
// copies (never across a sample, an unwind or I/O), so a loop thread calling Snapshot() waits at
// most for a copy.

#include <deque>
#include <mutex>
#include <optional>
#include <string>

#include "stallwatch/findings.h"

namespace stallwatch::agent::internal {

struct PublishedSnapshot {
  // The most recent closed stalls kept per loop.
  static constexpr size_t kRecentStalls = 64;

  mutable std::mutex mu;
  std::string name;  // the watchdog may rename the loop after its thread
  std::deque<StallFinding> recent;
  std::optional<StallFinding> ongoing;
  std::optional<DelayFinding> last_window;

  std::string Name() const {
    std::lock_guard<std::mutex> lock(mu);
    return name;
  }
};

}  // namespace stallwatch::agent::internal
