#pragma once
// Classification of a stall from what the watchdog measured over it. Pure.

#include <cstdint>
#include <string>

#include "stallwatch/findings.h"

namespace stallwatch::agent::internal {

struct ClassifierInput {
  int64_t wall_ns = 0;        // measured span (from the watchdog's baseline to now)
  int64_t cpu_ns = -1;        // loop thread CPU time over the span, -1 if unknown
  int64_t run_delay_ns = -1;  // loop thread run-queue wait over the span, -1 if unknown
  int64_t suspended_ns = 0;   // time of the span during which the whole process was paused
  std::string syscall;        // most frequent syscall seen in samples ("" if none)
  std::string fd_target;
  bool seen_running = false;  // a sample saw the thread outside any syscall
  int samples = 0;            // /proc samples taken during the stall
  int syscall_samples = 0;    // of which in `syscall`
};

struct Classification {
  StallClass stall_class = StallClass::kUnknown;
  double cpu_ratio = 0;
  double wait_ratio = 0;
  std::string hint;
};

Classification Classify(const ClassifierInput& in);
std::string HintFor(StallClass c, const std::string& syscall, const std::string& fd_target);

}  // namespace stallwatch::agent::internal
