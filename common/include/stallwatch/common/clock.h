#pragma once
// Clocks. All functions are thread-safe and async-signal safe (clock_gettime is).

#include <time.h>

#include <cstdint>

namespace stallwatch {

// Async-signal safe.
inline int64_t MonotonicNanos() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Async-signal safe.
inline int64_t RealtimeNanos() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Async-signal safe. CPU time of a thread's clock id (see pthread_getcpuclockid), -1 on error.
inline int64_t CpuClockNanos(clockid_t id) {
  timespec ts{};
  if (clock_gettime(id, &ts) != 0) {
    return -1;
  }
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace stallwatch
