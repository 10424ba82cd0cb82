#pragma once
// Helpers shared by the test programs: a free loopback port and polling for a condition.

#include <chrono>
#include <functional>

namespace stallwatch::testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int FreeLoopbackPort();

// Waits until pred() holds, polling every `poll`, for at most `timeout`; the last result of
// pred() (checked once more after the deadline).
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds poll = std::chrono::milliseconds(50));

}  // namespace stallwatch::testing
